//! HLS delivery from the media core: segmenter, playlists and the in-memory segment store.
