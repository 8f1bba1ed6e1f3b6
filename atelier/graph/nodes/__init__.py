"""The core Stable Diffusion nodes, with ComfyUI's class names, input names, defaults and ranges, by theme:

    loaders.py       CheckpointLoaderSimple, VAELoader
    conditioning.py  CLIPTextEncode, CLIPTextEncodeSDXL(Refiner), CLIPSetLastLayer, ConditioningCombine,
                     ConditioningSetArea
    latent.py        EmptyLatentImage, RepeatLatentBatch, LatentUpscale, LatentUpscaleBy, VAEDecode, VAEEncode
    sampling.py      KSampler, KSamplerAdvanced
    inpaint.py       SetLatentNoiseMask, VAEEncodeForInpaint, ImagePadForOutpaint
    image.py         LoadImage, LoadImageMask, ImageScale, ImageScaleBy, ImageScaleToTotalPixels, SaveImage,
                     PreviewImage

Each node is a thin, readable wrapper around atelier/pipeline.py: the graph is the same engine as the CLI and the
lab. The modules build on graph/kit.py (the node base, the value types, the sampler glue) and know nothing of each
other; graph/catalog.py imports them all and binds them to an environment.
"""
