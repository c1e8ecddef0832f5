# Asterisk 22 from Debian's package (Debian 12 has none; sid carries 22.x).
FROM debian:sid-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends asterisk asterisk-modules \
      asterisk-core-sounds-en-gsm asterisk-moh-opsound-gsm \
 && rm -rf /var/lib/apt/lists/*
# The configuration is rendered from the project's settings by the `render` service
# into the shared volume mounted at /srv/madoguchi.
CMD ["asterisk", "-f", "-n", "-C", "/srv/madoguchi/etc/asterisk.conf"]
