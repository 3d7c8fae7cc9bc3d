"""What is on disk, shared by writing, reading and recovery.

``tiff_layout`` (our BigTIFFs and their crash-safe finishing), ``sidecar`` (the legacy
frame-metadata JSON and atomic writes), ``journal`` (the per-frame crash journal),
``frameindex`` (frame counts and clocks of a sidecar or journal in bounded memory),
``names`` (file names with compound extensions) and ``video_check`` (which video
frames really decode).
"""
