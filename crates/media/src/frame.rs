//! Frames: access units shared by every reader, with a cache of the forms consumers derive from
//! them (a wire encoding, RTP payloads, ...), built once per frame and shared.

use bytes::Bytes;
use std::any::{Any, TypeId};
use std::sync::OnceLock;

use crate::TrackId;

/// A form of a frame that a consumer builds once and every reader of that consumer shares: an
/// FLV tag body, a chunked RTMP message, a PES payload, RTP payloads...
///
/// The implementing type is the cache slot's key, so each form has exactly one owner (the crate
/// that defines the type) and the core names no protocol. A build that fails is returned as an
/// error to that reader and never cached: the next reader tries again.
pub trait FrameForm: 'static {
    type Value: Clone + Send + Sync + 'static;
}

/// How many forms one frame caches; a form asked for beyond that is built but not kept.
const FORM_SLOTS: usize = 8;

type Slot = OnceLock<(TypeId, Box<dyn Any + Send + Sync>)>;

/// One access unit of one track.
///
/// Payload forms (one canonical form per codec; adapters convert at the edges):
/// - H.264 / H.265: NAL units, each prefixed by its 4-byte big-endian length (AVCC/HVCC form).
/// - AV1: OBUs in the low-overhead format with sizes, as in MP4 samples.
/// - VP8 / VP9: the frame as in MP4 samples.
/// - AAC: one raw access unit (no ADTS header). Opus: one packet. MP3: one frame.
/// - G.711: the raw samples.
pub struct Frame {
    pub track: TrackId,
    /// Decode timestamp in [`CLOCK_RATE`](crate::CLOCK_RATE) ticks.
    pub dts: i64,
    /// Presentation timestamp in [`CLOCK_RATE`](crate::CLOCK_RATE) ticks.
    pub pts: i64,
    /// A random access point: an IDR/IRAP/key frame for video; always true for audio.
    pub keyframe: bool,
    pub data: Bytes,
    /// When the frame came into the server (made by its ingest, or by a transform): outputs
    /// measure their own delay from it (HLS part readiness).
    pub arrived: std::time::Instant,
    /// Allocated when the first reader builds a form; read without locks (every viewer of a
    /// frame reads its forms, so a lock here would be taken by all of them).
    forms: OnceLock<Box<[Slot; FORM_SLOTS]>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("track", &self.track)
            .field("dts", &self.dts)
            .field("pts", &self.pts)
            .field("keyframe", &self.keyframe)
            .field("len", &self.data.len())
            .finish()
    }
}

impl Frame {
    pub fn new(track: TrackId, dts: i64, pts: i64, keyframe: bool, data: Bytes) -> Self {
        Frame {
            track,
            dts,
            pts,
            keyframe,
            data,
            arrived: std::time::Instant::now(),
            forms: OnceLock::new(),
        }
    }

    /// Composition offset (PTS - DTS) in ticks.
    pub fn cts(&self) -> i64 {
        self.pts - self.dts
    }

    /// This frame's form `F`, built with `build` by the first reader that asks and shared with
    /// the others. An error is returned to the caller and not cached.
    pub fn form<F: FrameForm, E>(
        &self,
        build: impl FnOnce(&Frame) -> Result<F::Value, E>,
    ) -> Result<F::Value, E> {
        let key = TypeId::of::<F>();
        if let Some(v) = self.cached::<F>(key) {
            return Ok(v);
        }
        // Built without the lock held: a build may itself ask for another form of this frame
        // (the RTMP message is made of the FLV body). Two readers racing may both build; the
        // first value stored is the one every later reader gets.
        let value = build(self)?;
        let slots = self.forms.get_or_init(Default::default);
        for slot in slots.iter() {
            let (k, v) = slot.get_or_init(|| (key, Box::new(value.clone())));
            if *k == key {
                // Ours, or another reader's that won the race: the same for everyone from now.
                if let Some(v) = v.downcast_ref::<F::Value>() {
                    return Ok(v.clone());
                }
            }
        }
        // Every slot holds another form: this one is rebuilt by each reader. Today's consumers
        // use at most six forms of one frame; say so once if that ever changes.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                form = std::any::type_name::<F>(),
                "a frame form found no free cache slot (FORM_SLOTS = {FORM_SLOTS}): it is built for every reader"
            );
        }
        Ok(value)
    }

    fn cached<F: FrameForm>(&self, key: TypeId) -> Option<F::Value> {
        let slots = self.forms.get()?;
        for slot in slots.iter() {
            match slot.get() {
                Some((k, v)) if *k == key => return v.downcast_ref::<F::Value>().cloned(),
                Some(_) => {}
                None => return None,
            }
        }
        None
    }

    /// Stores `value` as this frame's form `F` before any reader asks: an ingest that already
    /// holds it (RTMP's FLV body) spares every reader building it. False when `F` is already
    /// there or every slot is taken.
    pub fn set_form<F: FrameForm>(&self, value: F::Value) -> bool {
        let key = TypeId::of::<F>();
        let slots = self.forms.get_or_init(Default::default);
        let mut value = Some(value);
        for slot in slots.iter() {
            let (k, _) = slot.get_or_init(|| (key, Box::new(value.take().expect("stored once"))));
            if *k == key {
                return value.is_none();
            }
        }
        false
    }

    /// The infallible variant of [`form`](Self::form).
    pub fn form_infallible<F: FrameForm>(&self, build: impl FnOnce(&Frame) -> F::Value) -> F::Value {
        match self.form::<F, std::convert::Infallible>(|f| Ok(build(f))) {
            Ok(v) => v,
            Err(e) => match e {},
        }
    }

    /// A copy of this frame on another track (derived tracks), sharing the payload.
    pub fn with_track(&self, track: TrackId) -> Frame {
        let mut f = Frame::new(track, self.dts, self.pts, self.keyframe, self.data.clone());
        f.arrived = self.arrived;
        f
    }

    pub(crate) fn shift(&mut self, offset: i64) {
        self.dts += offset;
        self.pts += offset;
    }
}

impl Clone for Frame {
    fn clone(&self) -> Self {
        self.with_track(self.track)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Upper;
    impl FrameForm for Upper {
        type Value = Bytes;
    }
    struct Len;
    impl FrameForm for Len {
        type Value = usize;
    }

    /// A form built from another form of the same frame (RTMP message from FLV body).
    #[test]
    fn a_form_may_use_another_form() {
        let f = Frame::new(0, 0, 0, true, Bytes::from_static(b"abc"));
        let n = f.form_infallible::<Len>(|f| f.form_infallible::<Upper>(|f| f.data.clone()).len());
        assert_eq!(n, 3);
        assert_eq!(
            f.form_infallible::<Upper>(|_| Bytes::new()),
            Bytes::from_static(b"abc")
        );
    }

    #[test]
    fn forms_are_built_once_and_errors_are_not_cached() {
        let f = Frame::new(0, 0, 0, true, Bytes::from_static(b"abc"));
        let mut builds = 0;
        for _ in 0..3 {
            let v = f
                .form::<Upper, ()>(|f| {
                    builds += 1;
                    Ok(Bytes::from(f.data.to_ascii_uppercase()))
                })
                .unwrap();
            assert_eq!(&v[..], b"ABC");
        }
        assert_eq!(builds, 1);
        assert_eq!(f.form::<Len, &str>(|_| Err("bad")), Err("bad"));
        assert_eq!(f.form::<Len, &str>(|f| Ok(f.data.len())), Ok(3));
        assert_eq!(f.form::<Len, &str>(|_| Err("not called")), Ok(3));
    }
}
