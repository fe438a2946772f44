# ringstore in a container: built on Debian bookworm with the project's own setup
# script, shipped on bookworm-slim with only the runtime libraries.
FROM debian:bookworm AS build
WORKDIR /src
COPY . .
RUN apt-get update \
 && apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 ca-certificates \
 && tools/setup --build-only \
 && strip build/ringstore

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 \
      libuv1 libsqlite3-0 libssl3 curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/ringstore /usr/local/bin/ringstore
# HTTP on TCP and gossip on UDP share the port.
EXPOSE 3000/tcp 3000/udp
VOLUME ["/data", "/disk1", "/disk2"]
ENV RINGSTORE_DATA=/data RINGSTORE_DISK=/disk1,/disk2
HEALTHCHECK --interval=5s --timeout=3s --retries=5 \
  CMD curl -fsS http://"$(hostname -i | cut -d' ' -f1)":3000/_/status >/dev/null || exit 1
ENTRYPOINT ["ringstore"]
CMD ["serve"]
