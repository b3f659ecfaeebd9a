"""The learned speech codec (paper §4): model, bitstream, container, training, evaluation."""
