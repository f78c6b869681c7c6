# FlowForge images, built without any registry (`flowforge image build` does all of this):
#
#   runner   python3, bash, node, FlowForge and Prefect; runs container jobs and the flow runs
#            of the docker work pool. `flowforge image build [--base IMAGE]`
#   service  the runner plus what `flowforge up` needs to serve the API, Prefect and a worker.
#            `flowforge image build --service`
#
# BASE must already hold python3 (3.11), bash and node: by default a Debian root filesystem
# made with debootstrap and `docker import`ed as flowforge-base:bookworm. The build context
# holds this file and wheels/: FlowForge and every dependency as wheels (`pip wheel`, run
# on the host), so the build installs with --no-index and needs no network or registry.
ARG BASE=flowforge-base:bookworm

FROM ${BASE} AS install
# The label lets `flowforge image build` prune this stage's image after the build.
LABEL flowforge.stage=install
COPY wheels /wheels
# pip runs from its own wheel: Debian's minimal python3 has no pip and no ensurepip.
RUN python3 "$(ls /wheels/pip-*.whl)/pip" install --no-index --find-links /wheels \
        --target /opt/flowforge/lib flowforge

FROM ${BASE} AS runner
COPY --from=install /opt/flowforge/lib /opt/flowforge/lib
# PYTHONPATH makes FlowForge and Prefect importable for the docker pool's flow runs; a
# container job gets its own PYTHONPATH (the helpers), so user scripts do not see them.
ENV PYTHONPATH=/opt/flowforge/lib \
    PATH=/opt/flowforge/lib/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
LABEL org.opencontainers.image.title="flowforge-runner"
# The docker pool runs flow runs as a non-root user with the project directory mounted at its
# own path; debootstrap's /root is 0700, which would hide a project under /root (the default
# FLOWFORGE_HOME of root) from that user. 0711: passable, not listable; the image keeps
# nothing there.
RUN chmod 0711 /root
WORKDIR /tmp

FROM runner AS service
ENV FLOWFORGE_HOME=/var/lib/flowforge \
    FLOWFORGE_API_HOST=0.0.0.0
EXPOSE 8000 4200
LABEL org.opencontainers.image.title="flowforge"
CMD ["flowforge", "up"]
