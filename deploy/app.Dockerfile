# The Python processes (ari_app, kiosk_bridge, web, rq worker, rq cron, config render).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml ./
COPY common ./common
COPY ari_app ./ari_app
COPY kiosk_bridge ./kiosk_bridge
COPY web ./web
COPY faq ./faq
COPY kpi ./kpi
COPY reports ./reports
COPY stack ./stack
COPY config ./config
COPY asterisk ./asterisk
RUN pip install --no-cache-dir . gunicorn
USER nobody
