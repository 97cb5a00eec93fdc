# tcptrace-bcc in a container. BCC compiles programs at run time against the
# host kernel's headers and loads them into the host kernel, so run it with:
#
#   docker run --rm --privileged --pid=host \
#     -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro \
#     -v /sys/kernel/debug:/sys/kernel/debug \
#     -v /sys/kernel/tracing:/sys/kernel/tracing \
#     <image> --program states
#
# bookworm: BCC 0.26 plus a 6.1 header tree it compiles against.
FROM debian:bookworm

COPY . /src
WORKDIR /src
RUN scripts/setup build && scripts/build && rm -rf /var/lib/apt/lists/*

ENTRYPOINT ["/src/build/tcptrace-bcc"]
