//! Mesh reconstruction: template sphere deformation with Chamfer + Laplacian smoothness loss; faces in the model metadata.
//!
//! (Being built; see the `mesh` subcommand.)
