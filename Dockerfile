# The image of web, worker and beat (compose.yaml): the project's own files on Python 3.11.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAILER_DATA_DIR=/app/data

WORKDIR /app
COPY pyproject.toml README.md worker.py ./
COPY mailer ./mailer
COPY subscribers ./subscribers
COPY templates ./templates
# Editable: the built-in templates are found next to the package (mailer/../templates),
# which a plain wheel does not carry. The dependencies come from pyproject.toml.
# Bytecode compiled once here (PYTHONDONTWRITEBYTECODE keeps the running image from
# writing it), so a command does not compile mailer's modules at every start.
RUN pip install --no-cache-dir -e . \
    && python -m compileall -q mailer subscribers worker.py \
    && useradd --create-home --uid 10001 mailer \
    && mkdir -p /app/data /app/posts /app/outbox \
    && chown mailer:mailer /app/data /app/outbox

USER mailer
EXPOSE 8000
CMD ["mailer", "serve", "--host", "0.0.0.0", "--port", "8000"]
