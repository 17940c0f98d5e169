"""The export stage: TFLite formats, the .tflite file, bundles and the mobile and microcontroller forms."""
