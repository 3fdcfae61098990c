//! mcubes
