//! Derived tracks: conversions (AAC<->Opus now) that read a path's own tracks and write a new
//! track back into the same path, once per path however many readers take it, and only while
//! one does. Readers that do not take a derived track never see it: its arrival or departure
//! starts no new epoch for them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::path::PathShared;
use crate::{CodecId, Frame, Reader, Track};

/// Makes derived tracks. The server installs one ([`Registry::set_transformer`](crate::Registry::set_transformer)).
pub trait Transformer: Send + Sync + 'static {
    /// The track (its id is assigned by the core) this would derive in `to` from `from`, or
    /// `None` when it cannot. Called without any lock held; may build a codec to learn its
    /// configuration.
    fn derive(&self, from: &Track, to: CodecId) -> Option<Track>;

    /// Starts deriving `out`'s track from the frames of `reader` (the publisher's own tracks,
    /// from the latest keyframe, including every later [`Start`](crate::Event::Start)). Must not
    /// block: spawn the work on a runtime handle the implementation holds, and end it when
    /// [`DerivedWriter::cancelled`] resolves or [`DerivedWriter::write`] returns false.
    fn start(&self, from: CodecId, reader: Reader, out: DerivedWriter);
}

/// Where a transform writes its derived track.
pub struct DerivedWriter {
    shared: Arc<PathShared>,
    codec: CodecId,
    track: Track,
    cancel: CancellationToken,
}

impl DerivedWriter {
    pub(crate) fn new(
        shared: Arc<PathShared>,
        codec: CodecId,
        track: Track,
        cancel: CancellationToken,
    ) -> Self {
        DerivedWriter {
            shared,
            codec,
            track,
            cancel,
        }
    }

    /// The derived track, with the id the core gave it.
    pub fn track(&self) -> &Track {
        &self.track
    }

    /// The path this derives for.
    pub fn path(&self) -> &str {
        &self.shared.name
    }

    /// Writes one frame of the derived track (its track id is set here), with timestamps on the
    /// path's clock as the reader gave them. False when nobody takes the track any more.
    pub fn write(&self, frame: Frame) -> bool {
        !self.cancel.is_cancelled() && self.shared.write_derived(self.codec, self.track.id, frame)
    }

    /// Resolves when the derived track is no longer wanted (its last reader left, or the path ended).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
