package objects

// ObjectFile exposes objectFile to the external tests (FuzzObjectFile).
var ObjectFile = objectFile
