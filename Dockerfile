# One image for every neardup process: workers (either queue), Flower, and the CLI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs (see .dockerignore): tests, samples and benchmarks stay out of the image.
COPY pyproject.toml README.md ./
COPY common ./common
COPY workers ./workers
COPY producer ./producer
RUN pip install . && rm -rf /src

# Never run workers as root: they download and decode untrusted images.
RUN useradd --create-home --uid 10001 --user-group neardup
USER neardup
WORKDIR /home/neardup
ENV NEARDUP_DATA_DIR=/home/neardup/.neardup

CMD ["neardup", "--help"]
