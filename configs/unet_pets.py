"""U-Net on Oxford-IIIT Pet trimaps (pet, background, border) at 128x128, from the TFDS catalog.

Oxford-IIIT Pet is CC BY-SA 4.0. TFDS downloads it on first use (prepare it where the network
allows, then point data_dir at it).

    python -m jaxseg.train --config configs/unet_pets.py --workdir workdirs/unet_pets
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model = "unet"
    config.model_kwargs = {"padding": "SAME", "depth": 4, "base_features": 32, "batch_norm": True}
    config.dataset = "oxford_iiit_pet"
    config.resize_to = (128, 128)
    config.input_size = (128, 128)
    config.eval_size = (128, 128)
    config.batch_size = 32
    config.num_train_steps = 5000
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.learning_rate = 1e-3
    return config
