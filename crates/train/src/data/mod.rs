//! Datasets: the synthetic generator and loaders for ShapeNet (3D-R2N2 layout) and Pix3D.
