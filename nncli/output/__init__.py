"""What nncli draws for people: figures (`plotting`; the learning-rate range test, `lrfind`;
filters and feature maps, `pictures`), and the training callback that draws a run's curves.png.
It stands above the trainer (commands import it; training, builder, config, data and nn
cannot), and matplotlib is imported only when a figure is drawn.
"""
