"""ETC training recipe: data, flow cache, losses, training loop and export."""
