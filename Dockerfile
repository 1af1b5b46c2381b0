# The shoal node in a container.
#
#   docker build -t shoal .
#
# Run it on a GPU machine (the NVIDIA Container Toolkit installed on the host
# gives the container the driver's libraries, NVML included):
#
#   docker run -d --name shoal --restart unless-stopped \
#     --gpus all --network host \
#     -v /var/lib/shoal:/var/lib/shoal \
#     shoal up
#
# then `docker exec shoal shoal token` prints the join command for other
# machines, and `docker exec shoal shoal nodes` lists the pool.
#
# - --gpus all (or --gpus '"device=0,1"'): the cards this node offers; NVML
#   measures them. Without --gpus, declare cards with --gpu NAME:VRAM.
# - --network host: the node listens on 4242 (TCP and QUIC), finds LAN
#   members by mDNS and asks the router to forward its port (weights travel
#   on TCP 4243); none of that crosses Docker's bridge, and a join token
#   made behind the bridge carries the container's own addresses. Without host networking, publish the
#   ports and turn mDNS and port mapping off, and let this node join others
#   rather than hand out tokens:
#     -p 4242:4242/tcp -p 4242:4242/udp -p 4243:4243/tcp -p 127.0.0.1:8080:8080 \
#     shoal join TOKEN --mdns=false --nat=false --gateway 0.0.0.0:8080
# - The home (node key, pool secret, weight cache) is /var/lib/shoal: keep it
#   on a volume, or the node has a new identity and an empty cache after every
#   re-creation. Bind it at the same path on both sides if the node runs
#   replicas as containers (below): the engine mounts model directories by
#   their path on the host.
# - Replicas as containers: add -v /var/run/docker.sock:/var/run/docker.sock
#   to let the node start them on the host's engine. Without it replicas run
#   as processes inside this container (the reference template does; others
#   need their runtime installed in the image).
# - The gateway listens on 0.0.0.0:8080 in the container (CMD below): with
#   --network host that is every interface of the machine; pass
#   `up --gateway 127.0.0.1:8080` to keep it local.
#
# Dockerfile.local builds a static image FROM scratch without pulling
# anything (`make image`); it is what the tests use.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# cgo on: NVML is loaded through cgo. go-nvml's header marks some calls
# deprecated; shoal calls none of them.
ENV CGO_ENABLED=1 CGO_CFLAGS="-O2 -Wno-deprecated-declarations"
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/shoal ./cmd/shoal \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/shoal-reference ./cmd/shoal-reference

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
ENV SHOAL_HOME=/var/lib/shoal \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
VOLUME /var/lib/shoal
EXPOSE 4242/tcp 4242/udp 4243/tcp 8080/tcp
# SIGTERM (docker stop) makes the node leave the pool gracefully; give it
# time: docker stop -t 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["shoal"]
CMD ["up", "--gateway", "0.0.0.0:8080"]
