"""ari_app: the call controller. Routes every inbound call, drives app_queue over AMI,
records one timeline per call and publishes events."""
