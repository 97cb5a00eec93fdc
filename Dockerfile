# tcptrace-bcc in a container. BCC compiles programs at run time against the
# host kernel's headers and loads them into the host kernel, so run it with:
#
#   docker run --rm --privileged --pid=host \
#     -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro \
#     -v /sys/kernel/debug:/sys/kernel/debug \
#     -v /sys/kernel/tracing:/sys/kernel/tracing \
#     <image> --program states
#
# (deploy/daemonset.yaml runs it with far fewer privileges.)
#
# Two stages: the first builds the Debian package (scripts/package); the
# second is bookworm-slim with that package and what it Depends on, from
# Debian: no compiler driver, no test servers, no sources. BCC compiles
# with the libclang it links; the headers are the host's, mounted above.
# tests/dockerfile_test.cpp checks this shape.

FROM debian:bookworm AS package
COPY . /src
WORKDIR /src
# apt-get build-dep installs debian/control's Build-Depends and
# build-essential. scripts/package prints the .deb's path last.
RUN apt-get update \
 && apt-get build-dep -y --no-install-recommends ./ \
 && deb="$(scripts/package | tail -n 1)" \
 && mv "$deb" /tcptrace-bcc.deb

FROM debian:bookworm-slim
COPY --from=package /tcptrace-bcc.deb /tmp/tcptrace-bcc.deb
# Without Recommends: the kernel headers come from the host.
RUN apt-get update \
 && apt-get install -y --no-install-recommends /tmp/tcptrace-bcc.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/tcptrace-bcc.deb

ENTRYPOINT ["/usr/sbin/tcptrace-bcc"]
