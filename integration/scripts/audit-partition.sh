#!/usr/bin/env bash
# Audits one partition of a tierlog archive with standard tools only — the AWS CLI, jq,
# sha256sum, zstd, od and (for signed manifests) openssl — and no tierlog code. It is the
# procedure of docs/AUDIT.md, step by step; read that first.
#
# Usage: audit-partition.sh s3://BUCKET/PREFIX TOPIC PARTITION [PUBLIC_KEY_PEM ...]
# Environment: the AWS CLI's usual credentials; AWS_ENDPOINT_URL for a non-AWS store (MinIO,
# Garage, Ceph…); AUDIT_WORK=DIR to keep the downloaded files (default: a temp dir, removed);
# AUDIT_KEYRING=FILE, the tierlog keyring, to decrypt encrypted objects with
# decrypt-object.py (Python's `cryptography`): without it their stored bytes are still checked
# (size, SHA-256) and what needs the key is reported as not checked.
# Exit status: 0 every check passed; 3 a check failed (each failure is printed); 1 could not run.
set -euo pipefail

url="${1:?s3://bucket/prefix}"; topic="${2:?topic}"; partition="${3:?partition}"; shift 3
url="${url%/}"; bucket="$(cut -d/ -f3 <<<"$url")"; prefix="${url#s3://$bucket}"; prefix="${prefix#/}"
[[ "$topic" =~ ^[A-Za-z0-9._-]{1,249}$ && "$partition" =~ ^[0-9]{1,10}$ ]] || { echo "audit: bad topic or partition" >&2; exit 1; }
public_keys=("$@")
for tool in aws jq sha256sum zstd od; do
  command -v "$tool" >/dev/null || { echo "audit: $tool is not installed" >&2; exit 1; }
done
[ "${#public_keys[@]}" -eq 0 ] || command -v openssl >/dev/null || { echo "audit: openssl is not installed" >&2; exit 1; }
work="${AUDIT_WORK:-$(mktemp -d)}"
[ -n "${AUDIT_WORK:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work/objects"
s3=(aws s3)
[ -z "${AWS_ENDPOINT_URL:-}" ] || s3+=(--endpoint-url "$AWS_ENDPOINT_URL")
failures=0
not_decrypted=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
sha() { sha256sum | cut -d' ' -f1; }
# Every number read from the bucket is checked before the shell computes with it (bash
# arithmetic would evaluate anything else as an expression).
num() { [[ "$1" =~ ^[0-9]{1,18}$ ]]; }
# A key as tierlog builds it (docs/FORMAT.md): under this prefix (compared as text), then this
# topic (only '.' is special among a topic's characters), partition and 20-digit offset.
key_prefix="${prefix:+$prefix/}"
segment_key_re="^segments/[0-9a-f]{4}/${topic//./\\.}/$partition/([0-9]{20})-[0-9a-f]+-[0-9a-f]{16}\\.zst$"
archive_key_re="^manifests/${topic//./\\.}/$partition/archive/[0-9]{20}-[0-9a-f]+-[0-9a-f]{16}\\.json$"
under_prefix() { [ -z "$key_prefix" ] || [ "${1#"$key_prefix"}" != "$1" ]; }

# 1. Download every manifest version and archive of the partition.
"${s3[@]}" cp --quiet --recursive "$url/manifests/$topic/$partition/" "$work/manifests/" \
  || { echo "audit: cannot download $url/manifests/$topic/$partition/" >&2; exit 1; }
mapfile -t versions < <(ls "$work/manifests" | grep -E '^[0-9]{20}\.json$' | sort)
[ "${#versions[@]}" -gt 0 ] || { echo "audit: no manifest version under $url/manifests/$topic/$partition/" >&2; exit 1; }

# 2. Each version: numbered 1..N without a gap, body checksum, and signature where keys are given.
expected=1
for file in "${versions[@]}"; do
  path="$work/manifests/$file"; number=$((10#${file%.json}))
  [ "$number" -eq "$expected" ] || fail "manifest version $expected is missing (next is $number)"
  expected=$((number + 1))
  header="$(head -n 1 "$path")"; body="$(sed -n 2p "$path")"
  # Exactly two lines, a header tierlog reads, and the body its checksum names.
  printf '%s\n%s\n' "$header" "$body" | cmp -s - "$path" || fail "$file: not exactly a header line and a body line"
  jq -e '.format == "tierlog-manifest" and (.format_version | IN(1, 2, 3, 4))' <<<"$header" >/dev/null 2>&1 \
    || fail "$file: not a manifest header of a version tierlog reads"
  # Version 4 exactly when the body has an expired section (retention cut the history).
  [ "$(jq -r '.format_version == 4' <<<"$header" 2>/dev/null)" = "$(jq -r 'has("expired")' <<<"$body" 2>/dev/null)" ] \
    || fail "$file: not a manifest header of a version tierlog reads with this body (version 4 and an expired section go together)"
  [ "$(printf '%s' "$body" | sha)" = "$(jq -r .body_sha256 <<<"$header")" ] \
    || fail "$file: body SHA-256 differs from its header"
  [ "$(jq -r '"\(.topic)/\(.partition)/\(.manifest_version)"' <<<"$body")" = "$topic/$partition/$number" ] \
    || fail "$file: names another partition or version"
  if [ "${#public_keys[@]}" -gt 0 ]; then
    signature="$(jq -r 'select((.format_version == 3 or .format_version == 4) and .signature.algorithm == "ed25519") | .signature.value // empty' <<<"$header")"
    if [ -z "$signature" ]; then fail "$file: not signed"; else
      printf 'tierlog-manifest-signature-v1\n%s\n%s\n%s\n%s' "$topic" "$partition" "$number" \
        "$(jq -r .body_sha256 <<<"$header")" > "$work/message"
      base64 -d <<<"$signature" > "$work/signature"
      verified=no
      for key in "${public_keys[@]}"; do
        if openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$work/message" -sigfile "$work/signature" >/dev/null 2>&1; then
          verified=yes; break
        fi
      done
      [ "$verified" = yes ] || fail "$file: the signature does not verify with any public key given"
    fi
  fi
done

# 3. The newest version's whole chain: archives (whole-object SHA-256 as referenced, body
#    checksum), then inline entries; every entry's hash recomputed; links from 64 zeros;
#    offsets dense.
newest="$work/manifests/${versions[-1]}"
newest_body="$(sed -n 2p "$newest")"
: > "$work/entries.jsonl"
while IFS=$'\t' read -r key sha256; do
  under_prefix "$key" && [[ "${key#"$key_prefix"}" =~ $archive_key_re ]] || { fail "archive $key is not an archive of $topic/$partition under this prefix"; continue; }
  archive="$work/manifests/archive/${key##*/}"
  [ -f "$archive" ] || { fail "archive $key is missing"; continue; }
  [ "$(sha < "$archive")" = "$sha256" ] || fail "archive $key: SHA-256 differs from the manifest's reference"
  [ "$(sed -n 2p "$archive" | tr -d '\n' | sha)" = "$(head -n 1 "$archive" | jq -r .body_sha256)" ] \
    || fail "archive $key: body SHA-256 differs from its header"
  sed -n 2p "$archive" | jq -c '.entries[]' >> "$work/entries.jsonl"
done < <(jq -r '.archives[] | [.key, .sha256] | @tsv' <<<"$newest_body")
jq -c '.entries[]' <<<"$newest_body" >> "$work/entries.jsonl"

# The hashed text of docs/FORMAT.md ("Manifest"): fields joined by "|", the two append
# times appended when either is present (an absent one as the empty string), then
# "key_id=<id>" for an encrypted object.
hash_text='[.prev_hash, .base_offset, .last_offset, .min_timestamp, .max_timestamp, .raw_bytes,
  .object_bytes, .chunks, .key, .index_position, .index_len, .raw_sha256, .object_sha256, .uploaded_ms]
  + (if has("min_append_time") or has("max_append_time")
     then [(.min_append_time // ""), (.max_append_time // "")] else [] end)
  + (if has("key_id") then ["key_id=" + .key_id] else [] end)
  | map(tostring) | join("|")'
# Version 4 (after remote retention): the chain resumes at expired.before_offset from
# expired.last_hash, which step 4 finds in an older version's chain.
link="$(jq -r '.expired.last_hash // "0000000000000000000000000000000000000000000000000000000000000000"' <<<"$newest_body")"
cut="$(jq -r '.expired.before_offset // 0' <<<"$newest_body")"
link_at_cut="$link"
next=""
if [ "$cut" -gt 0 ]; then next="$cut"; fi
: > "$work/chain.txt"
while read -r entry; do
  base="$(jq -r .base_offset <<<"$entry")"; last="$(jq -r .last_offset <<<"$entry")"
  hash="$(jq -r .hash <<<"$entry")"
  if ! jq -e '[.base_offset, .last_offset, .object_bytes, .raw_bytes] | all(type == "number" and . >= 0 and . == floor)' \
       <<<"$entry" >/dev/null 2>&1 || ! num "$base" || ! num "$last" || [ "$last" -lt "$base" ]; then
    fail "an entry has offsets or sizes that are not whole numbers in order: $(jq -c '{base_offset, last_offset}' <<<"$entry" 2>/dev/null)"
    next=""; link="$hash"; continue
  fi
  [ "$(jq -r .prev_hash <<<"$entry")" = "$link" ] || fail "entry at offset $base does not link to the entry before it"
  [ "$(jq -r "$hash_text" <<<"$entry" | tr -d '\n' | sha)" = "$hash" ] || fail "entry at offset $base does not match its hash"
  [ -z "$next" ] || [ "$base" -eq "$next" ] || fail "offsets $next..$((base - 1)) are in no entry (or overlap)"
  echo "$base $last $hash" >> "$work/chain.txt"
  link="$hash"; next=$((last + 1))
done < "$work/entries.jsonl"

# 4. Every version is a prefix of the newest: each entry any version lists (by offset and
#    chained hash, which covers everything before it) is in the newest chain — except entries
#    below the retention cut, whose link (expired.last_hash) must be the hash an older version
#    (or a kept archive) gives the entry ending right before the cut.
linked=no
[ "$cut" -gt 0 ] || linked=yes
for file in "${versions[@]}"; do
  while read -r base last hash; do
    [ "$last" -lt "$cut" ] && { [ "$last" -eq "$((cut - 1))" ] && [ "$hash" = "$link_at_cut" ] && linked=yes; continue; }
    grep -qxF "$base $last $hash" "$work/chain.txt" || fail "$file: entry '$base $last $hash' is not in the newest version's chain (history rewritten)"
  done < <(sed -n 2p "$work/manifests/$file" | jq -r '.entries[] | "\(.base_offset) \(.last_offset) \(.hash)"')
  while read -r end hash; do
    [ "$end" -lt "$cut" ] && { [ "$end" -eq "$((cut - 1))" ] && [ "$hash" = "$link_at_cut" ] && linked=yes; continue; }
    grep -q " $end $hash\$" "$work/chain.txt" || fail "$file: an archive ending '$end' is not in the newest version's chain"
  done < <(sed -n 2p "$work/manifests/$file" | jq -r '.archives[] | "\(.last_offset) \(.last_hash)"')
done
for archive in "$work"/manifests/archive/*; do
  [ -f "$archive" ] && [ "$linked" = no ] || continue
  sed -n 2p "$archive" | jq -r '.entries[] | "\(.last_offset) \(.hash)"' | grep -qxF "$((cut - 1)) $link_at_cut" && linked=yes
done
[ "$linked" = yes ] || fail "the retention cut at offset $cut links to $link_at_cut, which no older version gives the entry ending at $((cut - 1))"


# 5. Every object: size and SHA-256 as listed; `zstd -d` gives the segment whose SHA-256 the
#    manifest lists; its first batch starts at the entry's base offset (bytes 0..8, big-endian).
while read -r entry; do
  key="$(jq -r .key <<<"$entry")"; base="$(jq -r .base_offset <<<"$entry")"
  object="$work/objects/object.zst"
  num "$base" || continue # reported in step 3
  if ! under_prefix "$key" || ! [[ "${key#"$key_prefix"}" =~ $segment_key_re ]] \
     || [ "${BASH_REMATCH[1]}" != "$(printf '%020d' "$base")" ]; then
    fail "entry at offset $base names $key, not a segment of $topic/$partition at that offset under this prefix"; continue
  fi
  if ! "${s3[@]}" cp --quiet "s3://$bucket/$key" "$object" 2>/dev/null; then
    fail "object $key (offsets $base..) is missing"; continue
  fi
  [ "$(stat -c %s "$object")" = "$(jq -r .object_bytes <<<"$entry")" ] || fail "object $key: size differs from the manifest's"
  [ "$(sha < "$object")" = "$(jq -r .object_sha256 <<<"$entry")" ] || fail "object $key: SHA-256 differs from the manifest's"
  key_id="$(jq -r '.key_id // ""' <<<"$entry")"
  if [ -n "$key_id" ] && [ -z "${AUDIT_KEYRING:-}" ]; then
    echo "not checked: object $key is encrypted with key id '$key_id' (set AUDIT_KEYRING to decrypt it)"
    not_decrypted=$((not_decrypted + 1)); continue
  fi
  if [ -n "$key_id" ]; then
    decode() { python3 "$(dirname "$0")/decrypt-object.py" "$AUDIT_KEYRING" "$topic" "$partition" "$object" | zstd -q -d -c; }
  else
    decode() { zstd -q -d -c "$object"; }
  fi
  if decode > "$work/objects/segment.log" 2>/dev/null; then
    [ "$(sha < "$work/objects/segment.log")" = "$(jq -r .raw_sha256 <<<"$entry")" ] \
      || fail "object $key: the decompressed segment's SHA-256 differs from the manifest's"
    first="$(od -An -tx1 -N8 "$work/objects/segment.log" | tr -d ' \n')"
    [ "$((16#${first:-0}))" -eq "$base" ] || fail "object $key: the first batch starts at offset $((16#${first:-0})), not $base"
  else
    fail "object $key: ${key_id:+decrypt-object.py or }zstd cannot decode it"
  fi
done < "$work/entries.jsonl"

entries="$(wc -l < "$work/entries.jsonl")"
if [ "$failures" -gt 0 ]; then
  echo "audit: $topic/$partition: $failures check(s) failed (${#versions[@]} manifest versions, $entries segments)"
  exit 3
fi
echo "audit: $topic/$partition: OK — ${#versions[@]} manifest versions, $entries segments, offsets up to $((next - 1))"
[ "$not_decrypted" -eq 0 ] || echo "audit: $not_decrypted encrypted segment(s) not decrypted: their contents are unchecked (hashes of the stored bytes were checked)"
