//! carehare-layer (being written)
