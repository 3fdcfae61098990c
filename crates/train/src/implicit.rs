//! Implicit surfaces: DeepSDF auto-decoder (clamped L1) and occupancy networks (BCE); image encoder + decoder f(z, xyz), exported as two parts with the first decoder layer split into two matrix products.
//!
//! (Being built; see the `implicit` subcommand.)
