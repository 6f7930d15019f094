# karta-admission image: the webhook server on python:3.11-slim, run as UID/GID 65532 and fit for
# a read-only root filesystem (the chart mounts emptyDirs at /tmp and the TLS directory).
#
#   docker build -t registry.example.com/karta-admission:0.1.0 .
#
# The entrypoint is the karta-admission console script in exec form: nothing runs through a shell.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# webhook/definitions is a link to docs/samples: the built-in Karta definitions ship in the wheel.
COPY pyproject.toml README.md ./
COPY docs/samples/ docs/samples/
COPY webhook/ webhook/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/karta-admission \
 && /opt/karta-admission/bin/pip install /wheels/*.whl \
 && /opt/karta-admission/bin/pip uninstall --yes pip \
 # Compile now: at run time the filesystem is read-only and PYTHONDONTWRITEBYTECODE is set.
 && /opt/karta-admission/bin/python -m compileall -q /opt/karta-admission/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="karta-admission" \
      org.opencontainers.image.description="Admission webhook for KubeRay workloads driven by Karta definitions" \
      org.opencontainers.image.licenses="Apache-2.0"
# Same base image as the build stage, so the venv's interpreter links resolve.
COPY --from=build /opt/karta-admission /opt/karta-admission
ENV PATH=/opt/karta-admission/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443
ENTRYPOINT ["/opt/karta-admission/bin/karta-admission"]
CMD ["serve", "--bind", "0.0.0.0:8443"]
