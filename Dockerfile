# totesys-platform: one image for the Dagster gRPC code server, the webserver and the daemon
# (deploy/compose.yaml or the ECS task definitions of deploy/terraform pick the command). Build from the repository root:
#
#   docker build -t totesys-platform:latest .
#
# No secret is baked in: every setting comes from the environment at run time (deploy/.env.example).

# --- build: the project and its locked dependencies in a virtualenv --------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, in their own layer: a code change does not reinstall them.
COPY deploy/constraints.txt ./deploy/constraints.txt
RUN pip install --requirement deploy/constraints.txt

COPY pyproject.toml README.md ./
COPY totesys_platform ./totesys_platform
# A regular (non-editable) install: the image runs the installed package, not the sources.
RUN pip install --constraint deploy/constraints.txt . \
    && python -c "import totesys_platform.definitions"

# --- runtime ----------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed, unprivileged user (uid 10001), so volume ownership is predictable.
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin dagster \
    && mkdir -p /opt/dagster/app /opt/dagster/dagster_home/storage /opt/dagster/ecs_home/storage \
    && chown -R dagster:dagster /opt/dagster

COPY --from=build /opt/venv /opt/venv
# Instance and workspace settings: root-owned and read-only for the service user.
COPY deploy/dagster.prod.yaml /opt/dagster/dagster_home/dagster.yaml
COPY deploy/workspace.prod.yaml /opt/dagster/app/workspace.yaml
# The same for ECS Fargate (deploy/terraform/ecs.tf sets DAGSTER_HOME=/opt/dagster/ecs_home).
COPY deploy/dagster.ecs.yaml /opt/dagster/ecs_home/dagster.yaml
COPY deploy/workspace.ecs.yaml /opt/dagster/app/workspace.ecs.yaml

USER dagster:dagster
WORKDIR /opt/dagster/app

# 4000: gRPC code server; 3000: webserver.
EXPOSE 4000 3000

CMD ["dagster", "api", "grpc", "-m", "totesys_platform.definitions", "-h", "0.0.0.0", "-p", "4000"]
