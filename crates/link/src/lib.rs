//! Transports for shapecast frames.
