"""Features and dictionaries: direction sets, sparse autoencoders, formats, fingerprints,
concept math, labels, feature search and feature classifiers.

The names below are the declared surface plugins import (``from polysteer.features import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.features.classifier import (
    OUTLIER_FACTOR,
    POOLS,
    ClassifierError,
    Driver,
    FeatureClassifier,
    binary_metrics,
    dictionary_digest,
    fit_linear,
    from_fit,
    load_classifier,
    pooled_features,
    resolve_classifier,
    roc_curve,
)
from polysteer.features.concepts import (
    difference_of_means,
    direction_set,
    linear_probe,
    median_norm,
    pca_of_differences,
)
from polysteer.features.dictionary import (
    DictionaryFormat,
    DictionaryInfo,
    DirectionSet,
    FeatureDictionary,
    SparseAutoencoder,
    dictionary_search_path,
    load_dictionary,
    resolve_dictionary,
)
from polysteer.features.fingerprint import ModelFingerprint, fingerprint
from polysteer.features.labels import (
    FeatureReport,
    ReportCollector,
    apply_labels,
    keep_user_labels,
    label_table,
    labels_path,
    load_labels,
    set_label,
)
from polysteer.features.search import (
    contrast_features,
    contrast_pooled,
    pool_activations,
    search_labels,
    similar_features,
)

__all__ = [
    "ClassifierError", "DictionaryFormat", "DictionaryInfo", "DirectionSet", "Driver",
    "FeatureClassifier", "FeatureDictionary", "FeatureReport", "ModelFingerprint", "OUTLIER_FACTOR",
    "POOLS", "ReportCollector", "SparseAutoencoder", "apply_labels", "binary_metrics",
    "contrast_features", "dictionary_search_path", "difference_of_means", "direction_set",
    "fingerprint", "fit_linear", "from_fit", "keep_user_labels", "label_table", "labels_path",
    "linear_probe", "load_classifier", "load_dictionary", "load_labels", "median_norm",
    "pca_of_differences", "pooled_features", "resolve_classifier", "resolve_dictionary",
    "roc_curve", "search_labels", "set_label", "similar_features",
    "contrast_pooled", "dictionary_digest", "pool_activations",
]
