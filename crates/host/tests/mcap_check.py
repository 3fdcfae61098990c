#!/usr/bin/env python3
"""Independent check of a shapecast MCAP recording with the MCAP project's readers.

Decodes every PointCloud2 with mcap_ros2 (which parses the ros2msg schema text stored in
the file) and prints `clouds=N points=M`. Exit 3 when the Python packages are missing
(pip install mcap mcap-ros2-support), 1 on any inconsistency.
"""
import json
import struct
import sys

try:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
except ImportError as e:  # pragma: no cover
    print(f"missing python package: {e}")
    sys.exit(3)


def main(path):
    clouds = points = strings = 0
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        assert summary is not None, "no summary: file not finished"
        for schema, channel, message, msg in reader.iter_decoded_messages():
            # rosbag2: one serialization format per bag
            assert channel.message_encoding == "cdr", channel.message_encoding
            if schema.name == "std_msgs/msg/String":
                assert "device_id" in json.loads(msg.data)
                strings += 1
                continue
            assert schema.name == "sensor_msgs/msg/PointCloud2", schema.name
            names = [fl.name for fl in msg.fields]
            assert names[:3] == ["x", "y", "z"], names
            assert msg.height == 1 and msg.point_step * msg.width == len(msg.data)
            assert msg.row_step == len(msg.data) and msg.is_dense
            for i in range(msg.width):
                x, y, z = struct.unpack_from("<fff", msg.data, i * msg.point_step)
                assert all(v == v for v in (x, y, z)), "NaN coordinate"
            clouds += 1
            points += msg.width
    print(f"clouds={clouds} points={points} strings={strings}")


if __name__ == "__main__":
    main(sys.argv[1])
