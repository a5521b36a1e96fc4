# One image for every rainbridge process: receiver, worker, Flower, sandbox.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY receiver receiver
COPY worker worker
COPY shared shared
COPY ops ops
COPY devkit devkit
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --create-home --uid 10001 rainbridge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
USER rainbridge
WORKDIR /home/rainbridge
# gunicorn reads ./gunicorn.conf.py: the receiver's slow-client-safe worker class and deadlines.
COPY gunicorn.conf.py ./
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "receiver.app:create_app()"]
