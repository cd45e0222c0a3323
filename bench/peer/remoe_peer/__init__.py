"""remoe's model and training step in PyTorch: the peer remoe is measured against (bench/peer/README.md).

    config.py      the resolved remoe TOML config → PeerConfig (what the peer supports, checked)
    rng.py         remoe's random numbers (xoshiro256** through splitmix64): its data windows
    data.py        text as bytes, the training windows and the fixed validation windows
    model.py       the decoder, dense or MoE (ReLU or softmax top-k routing), its regularisers
    checkpoint.py  a remoe checkpoint (safetensors + state.json) into the peer
    train.py       the training step (AdamW, clipping, the λ controller), training and evaluation
"""
