# shellcheck shell=bash
# Writes an OCI image archive (image layout 1.0, one uncompressed layer) from a root folder,
# with tar and sha256sum only: no registry, no base image, no daemon. Sourced by
# scripts/build-image and scripts/control-plane.
#
#   oci_archive ROOTFS REF OUT CONFIG_JSON
#
# ROOTFS       folder whose content becomes the image's only layer (owned by root in the layer)
# REF          the image reference containerd records on import (e.g. localhost/name:tag)
# OUT          the archive to write
# CONFIG_JSON  the image config's "config" object (User, Entrypoint, Cmd, ...)
#
# The layer is reproducible: sorted entries, uid/gid 0, mtime 0. Prints the manifest digest.

# json_string TEXT: TEXT as a JSON string (quotes and backslashes escaped; no control characters).
json_string() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# oci_blob DIR FILE: moves FILE into DIR/blobs/sha256 under its digest; prints "DIGEST SIZE".
oci_blob() {
    local dir=$1 file=$2 digest size
    digest=$(sha256sum "$file" | cut -d' ' -f1)
    size=$(stat -c %s "$file")
    mkdir -p "$dir/blobs/sha256"
    mv "$file" "$dir/blobs/sha256/$digest"
    echo "sha256:$digest $size"
}

oci_archive() {
    local rootfs=$1 ref=$2 out=$3 config=$4
    # Scratch space beside the archive, so whoever removes the archive's folder removes it too.
    local work=$out.work arch
    rm -rf "$work"
    mkdir -p "$work"
    case $(uname -m) in
        x86_64) arch=amd64 ;;
        aarch64) arch=arm64 ;;
        *) arch=$(uname -m) ;;
    esac

    local entries=()
    mapfile -t entries < <(cd "$rootfs" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
    tar --create --file "$work/layer.tar" --directory "$rootfs" --sort=name --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        --numeric-owner --owner=0 --group=0 --mtime=@0 -- "${entries[@]}"
    local layer layer_digest layer_size
    layer=$(oci_blob "$work/layout" "$work/layer.tar")
    layer_digest=${layer% *} layer_size=${layer#* }

    printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created_by":"scripts/lib/oci.sh"}]}' \
        "$arch" "$config" "$layer_digest" >"$work/config.json"
    local conf conf_digest conf_size
    conf=$(oci_blob "$work/layout" "$work/config.json")
    conf_digest=${conf% *} conf_size=${conf#* }

    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
        "$conf_digest" "$conf_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
    local manifest manifest_digest manifest_size
    manifest=$(oci_blob "$work/layout" "$work/manifest.json")
    manifest_digest=${manifest% *} manifest_size=${manifest#* }

    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":%s,"org.opencontainers.image.ref.name":%s}}]}' \
        "$manifest_digest" "$manifest_size" "$arch" "$(json_string "$ref")" "$(json_string "${ref##*:}")" \
        >"$work/layout/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

    mkdir -p "$(dirname "$out")"
    tar --create --file "$out.tmp" --directory "$work/layout" --sort=name --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        --numeric-owner --owner=0 --group=0 --mtime=@0 -- oci-layout index.json blobs
    mv "$out.tmp" "$out"
    rm -rf "$work"
    echo "$manifest_digest"
}
