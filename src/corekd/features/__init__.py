"""From raw media to features, offline: text (MiniLM), audio (openSMILE), visual (face HOG). docs/features.md."""
