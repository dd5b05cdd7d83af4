"""pcgan: StyleGAN2 for 3D faces as coloured point clouds."""
