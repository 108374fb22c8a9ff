# syntax=docker/dockerfile:1
# One file, two images:
#   docker build --target operator -t prunejob-operator .   # kopf operator, no TensorFlow
#   docker build --target worker   -t prunejob-worker .     # `prunejob prune` on a TF GPU base
# Both run as the non-root uid 65532 (the uid the operator's Jobs request).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TF_GPU_IMAGE=tensorflow/tensorflow:2.21.0-gpu

# ---- build: wheels for the project from the lock file -----------------------------------
FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir "uv>=0.13,<0.14"  # the version that wrote uv.lock
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY prunejob ./prunejob
COPY pruner ./pruner
COPY operator ./operator
COPY contract ./contract
COPY devcluster ./devcluster
RUN uv export --locked --no-dev --no-hashes --extra operator --no-emit-project > /src/operator-reqs.txt \
 && uv export --locked --no-dev --no-hashes --extra pruner --no-emit-project > /src/worker-reqs.txt \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- operator: small, no TensorFlow ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /src/operator-reqs.txt /tmp/reqs.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir -r /tmp/reqs.txt \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && rm -rf /wheels /tmp/reqs.txt \
 && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin nonroot
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["prunejob"]
CMD ["operator", "--all-namespaces", "--liveness=0.0.0.0:8080", "--metrics-port=9090"]

# ---- worker: the pruner on TensorFlow with CUDA ------------------------------------------
FROM ${TF_GPU_IMAGE} AS worker
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/scratch TMPDIR=/scratch KERAS_HOME=/scratch/.keras
COPY --from=build /src/worker-reqs.txt /tmp/reqs.txt
COPY --from=build /wheels /wheels
# The base image brings TensorFlow with CUDA: keep it, install the rest.
RUN grep -v -E '^(tensorflow|tensorflow-cpu)==' /tmp/reqs.txt > /tmp/reqs-notf.txt \
 && pip install --no-cache-dir -r /tmp/reqs-notf.txt \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && rm -rf /wheels /tmp/reqs*.txt \
 && (getent passwd 65532 || useradd --uid 65532 --user-group --no-create-home \
      --shell /usr/sbin/nologin nonroot) \
 && mkdir -p /scratch && chown 65532:65532 /scratch
USER 65532:65532
WORKDIR /scratch
ENTRYPOINT []
CMD ["prunejob", "prune", "--help"]
