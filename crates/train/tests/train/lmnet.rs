//! Integration tests of [`shapecast_train::lmnet`].
