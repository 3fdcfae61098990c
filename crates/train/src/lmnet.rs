//! 3D-LMNet: point-cloud autoencoder, image encoder trained to match its latent, several hypotheses from a probabilistic latent with a diversity loss.
//!
//! (Being built; see the `lmnet` subcommand.)
