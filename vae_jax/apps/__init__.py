"""Applications built on trained models: imputation, semi-supervised classification, a digit classifier."""
