"""Evaluation metrics: FID (`fid`), roundtrip error (`roundtrip`), toy coverage of latent
shells (`coverage`) and cross-correlations of denoiser residuals over time (`autocorrelation`).
All take plain tensors and callables, so they work with any method's encode/decode/denoise."""

from bayesgen.metrics.autocorrelation import autocorrelations, cross_correlations, extract_outputs
from bayesgen.metrics.coverage import (
    RADII,
    Coverage,
    boundary_points,
    coverage_experiment,
    expected_coverage,
    inside,
)
from bayesgen.metrics.fid import (
    InceptionFeatures,
    feature_statistics,
    fid_calc,
    fid_ref,
    find_inception_weights,
    frechet_distance,
    image_batches,
    load_statistics,
    pixel_values,
    read_images,
    save_image_folder,
    save_statistics,
    to_uint8,
)
from bayesgen.metrics.roundtrip import relative_roundtrip_error, roundtrip_mse

__all__ = [
    "RADII",
    "Coverage",
    "InceptionFeatures",
    "autocorrelations",
    "boundary_points",
    "coverage_experiment",
    "cross_correlations",
    "expected_coverage",
    "extract_outputs",
    "feature_statistics",
    "fid_calc",
    "fid_ref",
    "find_inception_weights",
    "frechet_distance",
    "image_batches",
    "inside",
    "load_statistics",
    "pixel_values",
    "read_images",
    "relative_roundtrip_error",
    "roundtrip_mse",
    "save_image_folder",
    "save_statistics",
    "to_uint8",
]
