//! SVG plots of a scored series.
