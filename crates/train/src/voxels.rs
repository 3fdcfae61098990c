//! Voxel models (3D-R2N2): single-view 32^3 occupancy with BCE, and the multi-view variant whose recurrent fusion state is exported as state input/output.
//!
//! (Being built; see the `voxels` subcommand.)
