"""Image Score: image-quality labels, model, metrics and export."""
