//! DynTS's importance predictor, trained for any supported model: labels from teacher-forced
//! traces (`collect`, `kvbench dynts collect`), then the fit (`fit`, `kvbench dynts train`).

pub mod collect;
pub mod fit;
