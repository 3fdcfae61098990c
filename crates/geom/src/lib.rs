//! Geometry shared by the shapecast runtime, host and trainer.
//!
//! Each module has one owner concern: `atomic` (whole-file writes), `ply` (point/mesh files), `metrics`
//! (Chamfer, F-score, IoU), `mcubes` (marching cubes), `render` (pictures), `fasthash`
//! (a cheap hash for lattice-coordinate maps).
pub mod atomic;
pub mod fasthash;
pub mod mcubes;
pub mod metrics;
pub mod ply;
pub mod render;
