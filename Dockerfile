# VoicePulse: one image for the probe service, the simulator and the Locust master/workers
# (docker-compose.yml picks the command). `docker build -t voicepulse .`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY probes ./probes
COPY telemetry ./telemetry
COPY loadtests ./loadtests
COPY scheduler ./scheduler
COPY simulator ./simulator
COPY voicepulse ./voicepulse
COPY reports ./reports
RUN pip install . \
    && useradd --system --create-home --uid 10001 voicepulse \
    && mkdir -p /var/lib/voicepulse && chown voicepulse /var/lib/voicepulse

USER voicepulse
WORKDIR /var/lib/voicepulse
# 8765 simulator, 9108 probe status, 5557 Locust master; none is published by docker-compose.yml
EXPOSE 8765 9108 5557
ENTRYPOINT ["voicepulse"]
CMD ["--help"]
