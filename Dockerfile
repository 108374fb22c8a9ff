# syntax=docker/dockerfile:1
# One file, three images:
#   docker build --target operator   -t prunejob-operator .    # kopf operator, no TensorFlow
#   docker build --target worker-cpu -t prunejob-worker-cpu .  # `prunejob prune`, no TensorFlow
#   docker build --target worker     -t prunejob-worker .      # the same on a TF GPU base,
#                                                              # for --verify
# All run as the non-root uid 65532 (the uid the operator's Jobs request).

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
 && uv export --locked --no-dev --no-hashes --extra prune --no-emit-project > /src/worker-cpu-reqs.txt \
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

# ---- worker-cpu: `prunejob prune` without --verify: numpy and h5py, no TensorFlow ---------
# Model files are read and written without Keras, so this image starts a prune in about a
# second and is a fraction of the GPU image's size; `--verify` here is a one-line error
# naming the `pruner` extra (use the `worker` image for it).
FROM ${PYTHON_IMAGE} AS worker-cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/scratch TMPDIR=/scratch
COPY --from=build /src/worker-cpu-reqs.txt /tmp/reqs.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir -r /tmp/reqs.txt \
 && pip install --no-cache-dir --no-deps /wheels/*.whl \
 && rm -rf /wheels /tmp/reqs.txt \
 && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin nonroot \
 && mkdir -p /scratch && chown 65532:65532 /scratch
USER 65532:65532
WORKDIR /scratch
ENTRYPOINT []
CMD ["prunejob", "prune", "--help"]

# ---- worker: the pruner on TensorFlow with CUDA (for --verify) ----------------------------
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
