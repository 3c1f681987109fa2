# The service's image: gunicorn + gevent, the production package set only.
#   make image              # builds it with podman or docker (deploy/image.py)
#   docker build -t gevent-django .
# BASE_IMAGE is any Debian-like image with Python 3.11+ (python3 and its venv
# module); where no registry is reachable, `make image` builds one from
# Debian's packages (debootstrap) and passes it here.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# An imported root filesystem has no environment at all: state PATH.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY requirements/base.txt /tmp/base.txt
# Only requirements/base.txt (what production runs, pinned); pip and
# setuptools leave the virtualenv once it is filled: nothing installs at run time.
# A proxy's CA that the build host trusts reaches pip as a build secret
# (`--secret id=pip-ca,src=FILE`, as `make image` passes the host's PIP_CERT):
# used by this step, never stored in a layer.
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile -r /tmp/base.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ENVIRONMENT=production \
    BIND=0.0.0.0:8000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    XDG_RUNTIME_DIR=/tmp
# The root filesystem may be read-only: everything written at run time goes to
# /tmp (a tmpfs or an emptyDir): the Prometheus multiprocess directory,
# gunicorn's worker heartbeat files and its control socket (XDG_RUNTIME_DIR).
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# Owned by root, read-only to the service: it cannot rewrite its own code.
COPY . /app
RUN python3 -m compileall -q /app
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# gunicorn's graceful stop: it stops accepting, finishes the requests in
# flight (GUNICORN_GRACEFUL_TIMEOUT), then exits.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('BIND', ':8000').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
