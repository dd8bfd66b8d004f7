"""Files at the edges: image decoding and encoding (16-bit PNG included), input discovery, atomic writes."""
