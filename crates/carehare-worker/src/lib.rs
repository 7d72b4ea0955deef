//! carehare-worker (being written)
