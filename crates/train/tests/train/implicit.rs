//! Integration tests of [`shapecast_train::implicit`].
