"""Model-free data and image math: geometry of the plan, scale-states, resampling, colour."""
