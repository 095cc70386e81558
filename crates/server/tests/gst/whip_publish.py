#!/usr/bin/env python3
"""A WHIP publisher on GStreamer's webrtcbin (Debian's GStreamer 1.22 has no whipsink).

Usage: whip_publish.py URL SECONDS
Sends H.264 (x264, no B-frames) and Opus test signals to the WHIP endpoint URL, prints
"state connected" once ICE connects and "done STATE" at the end.
"""
import hashlib
import re
import ssl
import sys
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

url, seconds = sys.argv[1], int(sys.argv[2])
# Optional: a PEM file with an ECDSA certificate and key for DTLS. GStreamer's default DTLS
# certificate is RSA, which DTLS stacks made for WebRTC (str0m's) do not take.
pem = open(sys.argv[3]).read() if len(sys.argv) > 3 else None
Gst.init(None)
pipe = Gst.parse_launch(
    "webrtcbin name=w bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=60 "
    "! video/x-h264,profile=constrained-baseline ! rtph264pay config-interval=-1 pt=96 "
    "! application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000 ! w. "
    "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! opusenc "
    "! rtpopuspay pt=111 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! w."
)
w = pipe.get_by_name("w")
# Keep a reference to the ICE agent: without it webrtcbin can crash (PEERS.md).
agent = w.get_property("ice-agent")
# libnice skips loopback when it gathers; the tests run in a namespace that has only lo.
agent.emit("add-local-ip-address", "127.0.0.1")
loop = GLib.MainLoop()
state = {"ice": "new"}


def on_ice_state(obj, _pspec):
    s = w.get_property("ice-connection-state").value_nick
    if s != state["ice"]:
        state["ice"] = s
        print(f"state {s}", flush=True)


def on_answer_set(promise, _data):
    promise.wait()


def on_offer(promise, _data):
    promise.wait()
    reply = promise.get_reply()
    offer = reply.get_value("offer") if reply else None
    if offer is None:
        print(f"offer error {reply}", flush=True)
        loop.quit()
        return
    w.emit("set-local-description", offer, Gst.Promise.new())
    sdp = offer.sdp.as_text()
    if pem:
        # webrtcbin wrote the fingerprint of its default certificate into the offer before our
        # certificate was set on its DTLS elements: announce the one the handshake will use.
        cert = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S).group(0)
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert)).hexdigest().upper()
        fp = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        sdp = re.sub(r"a=fingerprint:\S+ \S+", f"a=fingerprint:sha-256 {fp}", sdp)
    req = urllib.request.Request(url, data=sdp.encode(), method="POST",
                                 headers={"Content-Type": "application/sdp"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            answer_text = r.read().decode()
            print(f"whip {r.status}", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"whip error {e}", flush=True)
        loop.quit()
        return
    _, msg = GstSdp.SDPMessage.new_from_text(answer_text)
    answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
    w.emit("set-remote-description", answer, Gst.Promise.new_with_change_func(on_answer_set, None))


def on_negotiation_needed(_w):
    # Once: both media are added before the pipeline starts.
    if not state.get("offered"):
        state["offered"] = True
        w.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))


def on_element(_bin, _sub, element):
    f = element.get_factory()
    if pem and f is not None and f.get_name() == "dtlsdec":
        element.set_property("pem", pem)


w.connect("on-negotiation-needed", on_negotiation_needed)
pipe.connect("deep-element-added", on_element)
w.connect("notify::ice-connection-state", on_ice_state)
pipe.set_state(Gst.State.PLAYING)
GLib.timeout_add_seconds(seconds, loop.quit)
loop.run()
print(f"done {state['ice']}", flush=True)
pipe.set_state(Gst.State.NULL)
del agent
