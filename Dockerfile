# syntax=docker/dockerfile:1
# taskmesh: one image for every tier. The command picks the daemon:
#   docker run IMAGE master --topology /etc/taskmesh/topology.yaml
#   docker run IMAGE region --name eu --topology ...   |   worker --region eu --topology ...
#   docker run IMAGE db upgrade                         (TASKMESH_DATABASE_URL in the environment)
# docker-compose.yml at the repository root runs a whole cluster (Compose or Swarm).

# Build stage: a wheel of taskmesh (the ledger migrations of db/ ship inside it).
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.py setup.cfg pyproject.toml README.md ./
COPY db ./db
COPY taskmesh ./taskmesh
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Runtime stage: the wheel and its dependencies, no compiler, no sources, no root.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A numeric, fixed uid: runAsNonRoot checks and volume ownership need a number.
RUN groupadd --system --gid 10001 taskmesh \
    && useradd --system --uid 10001 --gid taskmesh --home-dir /var/lib/taskmesh --create-home taskmesh
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /var/lib/taskmesh
# master gRPC, HTTP (REST, dashboard, /metrics, /healthz); regions and workers use the ports
# their topology or --grpc-address/--http-address say.
EXPOSE 50051 8080
ENTRYPOINT ["taskmesh"]
CMD ["--help"]
