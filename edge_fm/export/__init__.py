"""The export stage: TFLite formats, the .tflite file, bundles and the mobile, microcontroller and Ethos-U forms."""
