#!/usr/bin/env bash
# (Re)creates the seed inputs of every fuzz target under fuzz/corpus/<target>/ from real
# captures: ffmpeg publishing to and playing from the release server through a recording TCP
# relay (RTMP), ffmpeg-made FLV / MPEG-TS / fragmented MP4 files, the repository's own ffmpeg
# captures (crates/*/testdata), the SDP offers of the repository's tests and of headless
# Chromium, and the header values curl really sends. Seeds are written as seed-<name> files;
# files the fuzzer added (named by their SHA-1) are left alone.
#
# Usage: fuzz/seed-corpus.sh            (about 30 s; loopback only; kills what it starts)
# Needs: target/release/sluice (not rebuilt here), ffmpeg, python3, curl; chromium optional.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CORPUS=$ROOT/fuzz/corpus
SLUICE=$ROOT/target/release/sluice
MAX=65536
WORK=$(mktemp -d /tmp/sluice-seed.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "seed: $*" >&2; }
T() { timeout -k 2 "$@"; } # every external step is bounded

[ -x "$SLUICE" ] || { echo "no $SLUICE (build it with cargo build --release -p sluice)" >&2; exit 1; }
TARGETS=(rtmp_chunk rtmp_handshake rtmp_sessions amf0 ts_demux webrtc_offer srt_streamid fmp4_stream
    fmp4_demux flv_tag codec_config http_range auth_header access_query signed_url jwt_token record_probe)
for t in "${TARGETS[@]}"; do
    mkdir -p "$CORPUS/$t"
    rm -f "$CORPUS/$t"/seed-*
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RTMP_PORT=$(free_port); RELAY_PORT=$(free_port); API_PORT=$(free_port); PB_PORT=$(free_port); HTTPCAP_PORT=$(free_port)

# ---------------------------------------------------------------- helpers (python)
cat >"$WORK/relay.py" <<'EOF'
# TCP relay 127.0.0.1:LISTEN -> 127.0.0.1:UPSTREAM recording each connection's two directions
# to DIR/conn<N>.c2s and DIR/conn<N>.s2c.
import socket, sys, threading
listen, upstream, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen)); srv.listen(8)
def pipe(a, b, path):
    with open(path, "wb") as f:
        while True:
            try:
                x = a.recv(65536)
            except OSError:
                break
            if not x:
                break
            f.write(x); f.flush()
            try:
                b.sendall(x)
            except OSError:
                break
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
n = 0
while True:
    c, _ = srv.accept()
    u = socket.create_connection(("127.0.0.1", upstream))
    for a, b, suf in ((c, u, "c2s"), (u, c, "s2c")):
        threading.Thread(target=pipe, args=(a, b, f"{d}/conn{n}.{suf}"), daemon=True).start()
    n += 1
EOF

cat >"$WORK/httpcap.py" <<'EOF'
# Records the Authorization and Range header values that HTTP clients send, one file each.
import http.server, sys
port, d = int(sys.argv[1]), sys.argv[2]
n = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        for h in ("Authorization", "Range"):
            v = self.headers.get(h)
            if v is not None:
                with open(f"{d}/{h.lower()}-{n[0]}", "w") as f:
                    f.write(v)
                n[0] += 1
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
EOF

cat >"$WORK/cut.py" <<'EOF'
import os, re, sys, glob, struct, base64, hmac, hashlib, json, zlib
MAX = 65536
corpus, work, root = sys.argv[1], sys.argv[2], sys.argv[3]
def put(target, name, data):
    data = bytes(data)[:MAX]
    if data:
        with open(f"{corpus}/{target}/seed-{name}", "wb") as f:
            f.write(data)
def read(p):
    with open(p, "rb") as f:
        return f.read()
def exists(p): return os.path.exists(p) and os.path.getsize(p) > 0

# ---- RTMP chunk streams -> messages
def messages(data):
    out, chunk, prev, partial, i = [], 128, {}, {}, 0
    try:
        while i < len(data):
            b = data[i]; fmt, cs = b >> 6, b & 0x3f; i += 1
            if cs == 0: cs = 64 + data[i]; i += 1
            elif cs == 1: cs = 64 + data[i] + 256 * data[i + 1]; i += 2
            p = prev.setdefault(cs, {"len": 0, "type": 0, "ext": False})
            if fmt <= 2:
                ts = int.from_bytes(data[i:i + 3], "big")
                if fmt <= 1:
                    p["len"] = int.from_bytes(data[i + 3:i + 6], "big"); p["type"] = data[i + 6]
                i += {0: 11, 1: 7, 2: 3}[fmt]
                p["ext"] = ts == 0xFFFFFF
            if p["ext"]: i += 4
            buf = partial.setdefault(cs, bytearray())
            take = min(p["len"] - len(buf), chunk)
            if i + take > len(data): break
            buf += data[i:i + take]; i += take
            if len(buf) == p["len"]:
                out.append((p["type"], bytes(buf))); partial[cs] = bytearray()
                if p["type"] == 1: chunk = int.from_bytes(buf[:4], "big") & 0x7FFFFFFF
    except IndexError:
        pass
    return out

HS = 1 + 1536
rtmp = {}
for conn in sorted(glob.glob(f"{work}/rtmp/conn*.c2s")):
    c2s, s2c = read(conn), read(conn[:-3] + "s2c")
    if len(c2s) < HS + 1536 or len(s2c) < HS + 1536: continue
    cmds = [m for t, m in messages(c2s[HS + 1536:]) if t == 20]
    kind = "publish" if any(b"publish" in m[:40] for m in cmds) else "play"
    rtmp[kind] = (c2s, s2c)
for kind, (c2s, s2c) in rtmp.items():
    put("rtmp_handshake", f"{kind}-ffmpeg-c0c1", c2s[:HS])
    put("rtmp_handshake", f"{kind}-sluice-s0s1s2", s2c[:HS + 1536])
    put("rtmp_handshake", f"{kind}-ffmpeg-c0c1c2", c2s[:HS + 1536])
    # The targets read their first byte as the size of their reads *and* as stream data, so the
    # streams go in as captured (their first byte, a chunk basic header, picks the read size).
    cstream, sstream = c2s[HS + 1536:], s2c[HS + 1536:]
    put("rtmp_chunk", f"{kind}-ffmpeg-c2s", cstream)
    put("rtmp_chunk", f"{kind}-ffmpeg-c2s-4k", cstream[:4096])
    put("rtmp_chunk", f"{kind}-sluice-s2c", sstream)
    put("rtmp_sessions", f"{kind}-sluice-s2c", sstream)
    put("rtmp_sessions", f"{kind}-ffmpeg-c2s", cstream[:8192])
    for side, stream in (("ffmpeg", cstream), ("sluice", sstream)):
        for j, (t, m) in enumerate(messages(stream)):
            if t in (18, 20) and len(m) < MAX:
                name = re.sub(rb"[^A-Za-z0-9@]", b"", m[3:3 + m[2]] if len(m) > 3 and m[0] == 2 else b"").decode()
                put("amf0", f"{kind}-{side}-{j:02d}-{name or 'msg'}", m)

# ---- FLV tags
def flv_tags(data):
    i, out = 13, []
    while i + 11 <= len(data):
        t, size = data[i], int.from_bytes(data[i + 1:i + 4], "big")
        out.append((t, data[i + 11:i + 11 + size])); i += 11 + size + 4
    return out
asc = None
for f in sorted(glob.glob(f"{work}/media/*.flv")):
    name = os.path.basename(f)[:-4]
    tags = flv_tags(read(f))
    vids = [b for t, b in tags if t == 9]
    auds = [b for t, b in tags if t == 8]
    for j, b in enumerate(vids[:1] + [b for b in vids[1:] if b and b[0] >> 4 == 1][:1] + [b for b in vids[1:] if b and b[0] >> 4 == 2][:3]):
        put("flv_tag", f"{name}-video{j}", b)
    for j, b in enumerate(auds[:3]):
        put("flv_tag", f"{name}-audio{j}", b)
    if vids and len(vids[0]) > 5 and vids[0][0] & 0x0F == 7:
        put("codec_config", f"{name}-avcc", vids[0][5:])
    kf = [b for b in vids[1:] if b and b[0] >> 4 == 1 and len(b) > 5]
    if kf:
        put("codec_config", f"{name}-keyframe-avcc-nalus", kf[0][5:4096])
    if auds and auds[0] and auds[0][0] >> 4 == 10 and len(auds[0]) > 2 and auds[0][1] == 0:
        asc = auds[0][2:]
        put("codec_config", f"{name}-aac-asc", asc)

# ---- Annex B -> SPS/PPS/VPS
def annexb(data):
    idx = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    for a, b in zip(idx, idx[1:] + [len(data) + 3]):
        yield data[a:b - 3].rstrip(b"\x00")
for f in sorted(glob.glob(f"{work}/media/*.h264")) + sorted(glob.glob(f"{work}/media/*.hevc")):
    name, hevc = os.path.basename(f), f.endswith(".hevc")
    d = read(f)
    put("codec_config", f"{name}-annexb-head", d[:4096])
    for n in annexb(d[:MAX]):
        if not n: continue
        typ = (n[0] >> 1) & 0x3F if hevc else n[0] & 0x1F
        label = {32: "vps", 33: "sps", 34: "pps"} if hevc else {7: "sps", 8: "pps"}
        if typ in label and not exists(f"{corpus}/codec_config/seed-{name}-{label[typ]}"):
            put("codec_config", f"{name}-{label[typ]}", n)
for f in glob.glob(f"{root}/crates/codec/testdata/*"):
    put("codec_config", "testdata-" + os.path.basename(f), read(f))

# ---- MPEG-TS: 64 KB pieces aligned on 188
P = 188 * (MAX // 188)
for f in sorted(glob.glob(f"{work}/media/*.ts")):
    name, d = os.path.basename(f)[:-3], read(f)
    for j in range(0, min(len(d), 4 * P), P):
        put("ts_demux", f"{name}-{j // P}", d[j:j + P])
    put("record_probe", f"{name}-head", d[:P])

# ---- fMP4
td = f"{root}/crates/container/testdata"
def boxes(d):
    i, out = 0, []
    while i + 8 <= len(d):
        size = int.from_bytes(d[i:i + 4], "big")
        if size == 1: size = int.from_bytes(d[i + 8:i + 16], "big")
        if size < 8: break
        out.append((d[i + 4:i + 8], d[i:i + size])); i += size
    return out
def split_init(d): # (init, [fragments moof+mdat...])
    bs = boxes(d)
    init = b"".join(b for t, b in bs if t in (b"ftyp", b"moov"))
    frags, cur, last = [], b"", None
    for t, b in bs:
        if t in (b"ftyp", b"moov"): continue
        if t == b"styp" or (t in (b"sidx", b"moof") and last not in (b"styp", b"sidx")):
            if cur: frags.append(cur)
            cur = b""
        cur += b; last = t
    if cur: frags.append(cur)
    return init, frags
demux_inputs = {
    "hls-h264-aac": (read(f"{td}/ffmpeg_hls_fmp4_h264_aac_init.mp4"), [read(f"{td}/ffmpeg_hls_fmp4_h264_aac_seg0.m4s"), read(f"{td}/ffmpeg_hls_fmp4_h264_aac_seg1.m4s")]),
    "hls-h265-opus": (read(f"{td}/ffmpeg_hls_fmp4_h265_opus_init.mp4"), [read(f"{td}/ffmpeg_hls_fmp4_h265_opus_seg0.m4s")]),
}
whole = {k: i + b"".join(s) for k, (i, s) in demux_inputs.items()}
for f in ("ffmpeg_pipe_fmp4_av1.mp4", "ffmpeg_pipe_fmp4_vp9_aac.mp4"):
    whole[f[:-4]] = read(f"{td}/{f}")
    demux_inputs[f[:-4]] = split_init(whole[f[:-4]])
for f in sorted(glob.glob(f"{work}/media/*.mp4")) + sorted(glob.glob(f"{work}/rec/**/*.mp4", recursive=True))[:2]:
    name = ("sluice-recording-" if "/rec/" in f else "") + os.path.basename(f)[:-4]
    whole[name] = read(f)
    demux_inputs[name] = split_init(whole[name])
for name, (init, segs) in demux_inputs.items():
    if not init or len(init) > 0xFFFF: continue
    media = b"SEG!".join(segs)
    put("fmp4_demux", name, struct.pack(">H", len(init)) + init + media)
    if segs:
        put("fmp4_demux", name + "-one", struct.pack(">H", len(init)) + init + segs[0][:MAX - len(init) - 2])
for name, d in whole.items():
    put("fmp4_stream", name + "-reads256", b"\xff" + d)
    put("fmp4_stream", name + "-reads16", b"\x0f" + d[:16384])
    put("record_probe", name, d)

# ---- WebRTC: the offers of the repository's tests, Chromium's, STUN binding requests
offers = []
for f in glob.glob(f"{root}/crates/**/*.rs", recursive=True) + glob.glob(f"{root}/crates/**/*.mjs", recursive=True):
    src = open(f, encoding="utf-8", errors="replace").read()
    for m in re.finditer(r'"(v=0\\r\\n(?:[^"\\]|\\.|\\\n)*?)"', src, re.S):
        s = re.sub(r"\\\n\s*", "", m.group(1)).replace("\\r", "\r").replace("\\n", "\n").replace('\\"', '"')
        if "m=" in s and "{" not in s: offers.append((os.path.basename(f), s))
for j, (f, s) in enumerate(offers[:12]):
    put("webrtc_offer", f"test-{f}-{j}", s.encode())
for f in sorted(glob.glob(f"{work}/chromium/offer-*.sdp")):
    put("webrtc_offer", "chromium-" + os.path.basename(f)[:-4], read(f))
def stun_request(user, pwd, controlling=True, use_candidate=True):
    tid = hashlib.sha1(user.encode()).digest()[:12]
    def attr(t, v): return struct.pack(">HH", t, len(v)) + v + b"\x00" * (-len(v) % 4)
    body = attr(0x0006, user.encode()) + attr(0xC057, struct.pack(">HH", 1, 10))  # USERNAME, GOOG-NETWORK-INFO
    body += attr(0x802A if controlling else 0x8029, os.urandom(0) or b"\x12\x34\x56\x78\x9a\xbc\xde\xf0")
    if use_candidate: body += attr(0x0025, b"")
    body += attr(0x0024, struct.pack(">I", 1853824767))  # PRIORITY
    hdr = lambda n: struct.pack(">HHI", 0x0001, n, 0x2112A442) + tid
    mi = hmac.new(pwd.encode(), hdr(len(body) + 24) + body, hashlib.sha1).digest()
    body += attr(0x0008, mi)
    fp = (zlib.crc32(hdr(len(body) + 8) + body) ^ 0x5354554E) & 0xFFFFFFFF
    body += attr(0x8028, struct.pack(">I", fp))
    return hdr(len(body)) + body
put("webrtc_offer", "stun-binding-chrome-like", stun_request("fuzzufrg:Ab3d", "fuzzpasswordfuzzpassword"))
put("webrtc_offer", "stun-binding-controlled", stun_request("fuzzufrg:x9Yz", "fuzzpasswordfuzzpassword", False, False))
put("webrtc_offer", "stun-binding-bare", struct.pack(">HHI", 1, 0, 0x2112A442) + b"\x01" * 12)

# ---- header values real clients sent (curl, captured), Range values browsers send
for f in sorted(glob.glob(f"{work}/http/authorization-*")):
    put("auth_header", "curl-" + os.path.basename(f), read(f))
ranges = [read(f) for f in sorted(glob.glob(f"{work}/http/range-*"))]
ranges += [b"bytes=0-", b"bytes=0-1", b"bytes=65536-", b"bytes=-500", b"bytes=0-0,-1", b"bytes=100-199, 300-399"]  # Chrome/Firefox media, Safari probe, suffix, multi
for j, r in enumerate(ranges):
    for ln in (0, 1000, 65535):
        put("http_range", f"{j}-len{ln}", struct.pack("<H", ln) + r)
EOF

# ---------------------------------------------------------------- RTMP capture
mkdir -p "$WORK/rtmp" "$WORK/media" "$WORK/rec" "$WORK/http" "$WORK/chromium"
cat >"$WORK/cfg.toml" <<CFG
[rtmp]
listen = "127.0.0.1:$RTMP_PORT"
[http]
enabled = false
[srt]
enabled = false
[webrtc]
enabled = false
[metrics]
enabled = false
[api]
listen = "127.0.0.1:$API_PORT"
[playback]
listen = "127.0.0.1:$PB_PORT"
[log]
level = "warn"
[path_defaults.health]
enabled = false
[path_defaults.record]
enabled = true
path = "$WORK/rec/%path/%Y-%m-%d_%H-%M-%S-%f"
segment_duration = "1m"
CFG
"$SLUICE" --config "$WORK/cfg.toml" >"$WORK/sluice.log" 2>&1 &
PIDS+=($!)
python3 "$WORK/relay.py" "$RELAY_PORT" "$RTMP_PORT" "$WORK/rtmp" &
PIDS+=($!)
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $RTMP_PORT), 1); socket.create_connection(('127.0.0.1', $RELAY_PORT), 1)" 2>/dev/null && break
    sleep 0.1
done
log "RTMP capture: ffmpeg publish + play through the relay"
SMALL=(-f lavfi -i "testsrc2=size=320x240:rate=25" -f lavfi -i "sine=frequency=440:sample_rate=44100")
T 20 ffmpeg -nostdin -v error -re "${SMALL[@]}" -t 3 -c:v libx264 -preset veryfast -b:v 150k -g 25 -bf 0 \
    -pix_fmt yuv420p -c:a aac -b:a 64k -f flv "rtmp://127.0.0.1:$RELAY_PORT/live/cam" &
PUB=$!
sleep 1
T 15 ffmpeg -nostdin -v error -i "rtmp://127.0.0.1:$RELAY_PORT/live/cam" -t 2 -f null - || log "play exited $?"
wait "$PUB" || log "publish exited $?"
sleep 1.5 # the recording closes after the publisher leaves
kill "${PIDS[@]}" 2>/dev/null || true

# ---------------------------------------------------------------- media files
log "media files"
M=$WORK/media
T 60 ffmpeg -nostdin -v error "${SMALL[@]}" -t 2 -c:v libx264 -preset veryfast -b:v 300k -g 25 -pix_fmt yuv420p -c:a aac -b:a 64k -f flv "$M/h264-aac.flv"
T 60 ffmpeg -nostdin -v error "${SMALL[@]}" -t 2 -c:v libx264 -preset veryfast -b:v 300k -g 25 -pix_fmt yuv420p -c:a libmp3lame -b:a 64k -f flv "$M/h264-mp3.flv"
# HEVC in FLV (enhanced RTMP) needs ffmpeg >= 6.1; 5.1 refuses it.
T 60 ffmpeg -nostdin -v error "${SMALL[@]}" -t 2 -c:v libx265 -x265-params log-level=error -c:a aac -f flv "$M/h265-aac.flv" 2>/dev/null ||
    { rm -f "$M/h265-aac.flv"; log "this ffmpeg cannot put HEVC in FLV: classic FLV only"; }
T 60 ffmpeg -nostdin -v error "${SMALL[@]}" -t 4 -c:v libx264 -preset veryfast -b:v 400k -g 25 -pix_fmt yuv420p -c:a aac -b:a 64k -f mpegts "$M/h264-aac.ts"
T 60 ffmpeg -nostdin -v error "${SMALL[@]}" -t 4 -c:v libx265 -x265-params log-level=error -b:v 400k -c:a ac3 -b:a 96k -f mpegts "$M/h265-ac3.ts"
T 60 ffmpeg -nostdin -v error "${SMALL[@]}" -t 4 -c:v libx264 -preset veryfast -b:v 400k -g 25 -pix_fmt yuv420p -c:a mp2 -b:a 96k -f mpegts "$M/h264-mp2.ts"
T 60 ffmpeg -nostdin -v error "${SMALL[@]}" -t 2 -c:v libx264 -preset veryfast -b:v 150k -g 25 -pix_fmt yuv420p -c:a aac -b:a 64k \
    -movflags frag_keyframe+empty_moov+default_base_moof -f mp4 "$M/frag-h264-aac.mp4"
T 60 ffmpeg -nostdin -v error -f lavfi -i "testsrc2=size=320x240:rate=25" -t 1 -c:v libx264 -preset veryfast -pix_fmt yuv420p -f h264 "$M/x264.h264"
T 60 ffmpeg -nostdin -v error -f lavfi -i "testsrc2=size=320x240:rate=25" -t 1 -c:v libx265 -x265-params log-level=error -f hevc "$M/x265.hevc"

# ---------------------------------------------------------------- Chromium's SDP offers (no ICE gathering: nothing leaves the process)
if [ -x /usr/bin/chromium ]; then
    log "Chromium offers"
    cat >"$WORK/chromium/offer.html" <<'EOF'
<html><body><pre id="out"></pre><script>
(async () => {
  const offer = async (dir) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: dir});
    pc.addTransceiver('audio', {direction: dir});
    const o = await pc.createOffer();
    pc.close();
    return o.sdp;
  };
  const s = await offer('sendonly'), r = await offer('recvonly');
  document.getElementById('out').textContent = btoa(s) + '|' + btoa(r);
})();
</script></body></html>
EOF
    T 40 /usr/bin/chromium --headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --mute-audio \
        --user-data-dir="$WORK/chromium/profile" --virtual-time-budget=5000 --dump-dom \
        "file://$WORK/chromium/offer.html" >"$WORK/chromium/dom.html" 2>/dev/null || log "chromium exited $?"
    python3 - "$WORK/chromium" <<'EOF' || log "no Chromium offer"
import base64, re, sys
d = sys.argv[1]
m = re.search(r'<pre id="out">([A-Za-z0-9+/=]+)\|([A-Za-z0-9+/=]+)</pre>', open(f"{d}/dom.html").read())
for name, b in zip(("whip-sendonly", "whep-recvonly"), m.groups()):
    open(f"{d}/offer-{name}.sdp", "wb").write(base64.b64decode(b))
EOF
fi

# ---------------------------------------------------------------- headers curl sends
log "HTTP headers from curl"
python3 "$WORK/httpcap.py" "$HTTPCAP_PORT" "$WORK/http" &
CAP=$!
PIDS+=("$CAP")
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$HTTPCAP_PORT/" && break; sleep 0.1; done
U="http://127.0.0.1:$HTTPCAP_PORT/live/cam/index.m3u8"
JWT_SIGNED=$(python3 - <<'EOF'
import base64, hmac, hashlib, json
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
# Signed with another secret than the fuzz target's (it must refuse every token).
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
p = b(json.dumps({"sub": "viewer", "exp": 4102444800, "sluice": {"action": "read", "path": "live/x"}}, separators=(",", ":")).encode())
print(h + "." + p + "." + b(hmac.new(b"another-secret", (h + "." + p).encode(), hashlib.sha256).digest()))
EOF
)
T 5 curl -s -o /dev/null -u "publisher:s3cret pass" "$U"
T 5 curl -s -o /dev/null -u "user@example.com:p%40ss:with:colons" "$U"
T 5 curl -s -o /dev/null -H "Authorization: Bearer $JWT_SIGNED" "$U"
T 5 curl -s -o /dev/null --oauth2-bearer "opaque-token-0123456789" "$U"
T 5 curl -s -o /dev/null -r 0-499 "$U"
T 5 curl -s -o /dev/null -r 500- "$U"
T 5 curl -s -o /dev/null -r -500 "$U"
T 5 curl -s -o /dev/null -r 0-0,1-1 "$U"
kill "$CAP" 2>/dev/null || true

# ---------------------------------------------------------------- cut everything into seeds
log "cutting seeds"
python3 "$WORK/cut.py" "$CORPUS" "$WORK" "$ROOT"

# String targets: values as real clients send them.
s() { printf '%s' "$3" >"$CORPUS/$1/seed-$2"; }
s srt_streamid ffmpeg-publish '#!::r=live/cam,m=publish'
s srt_streamid ffmpeg-request '#!::r=live/cam,m=request'
s srt_streamid obs-publish-user '#!::r=live/cam,m=publish,u=alice,s=abc123'
s srt_streamid read-token '#!::m=request,r=live/cam,t=eyJhbGciOiJIUzI1NiJ9.e30.x'
s srt_streamid mediamtx-style 'publish:live/cam:user:pass'
s srt_streamid read-plain 'read:live/cam'
s srt_streamid bare-path 'live/cam'
s access_query rtmp-key-user-pass 'user=alice&pass=s3cret'
s access_query obs-key-query '?user=alice&password=p%40ss%20word'
s access_query hls-token "token=$JWT_SIGNED"
s access_query jwt-param "jwt=$JWT_SIGNED&_HLS_msn=12&_HLS_part=3"
s access_query signed-link "$(T 10 "$SLUICE" sign-url --secret seed-secret --base '' live/cam 2>/dev/null | sed 's/^[^?]*?//')"
s jwt_token hs256-other-secret "$JWT_SIGNED"
s jwt_token none-alg "$(python3 -c 'import base64,json;b=lambda x:base64.urlsafe_b64encode(json.dumps(x,separators=(",",":")).encode()).rstrip(b"=").decode();print(b({"alg":"none","typ":"JWT"})+"."+b({"sub":"x"})+".")')"
s jwt_token rs256-header "$(python3 -c 'import base64,json;b=lambda x:base64.urlsafe_b64encode(json.dumps(x,separators=(",",":")).encode()).rstrip(b"=").decode();print(b({"alg":"RS256","kid":"k1","typ":"JWT"})+"."+b({"sub":"x","exp":1})+".c2ln")')"
# Signed links as the server makes them (the binary's own sign-url), for the path the target checks.
n=0
for args in "--expires-in 1h" "--expires-in 7d --ip 192.0.2.1" "--expires-in 30s --ip 2001:db8::1" "--expires-in 2h --ip 10.0.0.7"; do
    # shellcheck disable=SC2086
    link=$(T 10 "$SLUICE" sign-url --secret fuzz-key $args --base '' live/x 2>/dev/null | sed 's/^[^?]*?//') || true
    [ -n "$link" ] && s signed_url "sluice-sign-url-$n" "$link"
    n=$((n + 1))
done

log "done:"
for t in "${TARGETS[@]}"; do
    printf '  %-15s %3d seeds %6d KB\n' "$t" "$(ls "$CORPUS/$t" | grep -c '^seed-' || true)" "$(du -sk "$CORPUS/$t" | cut -f1)" >&2
done
